//! XDP program: recognises replies to the agent's probes by their cookie,
//! pushes them to the agent through a ring buffer and consumes them; every
//! other frame passes untouched. The parsing and the cookie live in
//! `scanner-common`, where they are unit-tested on the host.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, PerCpuArray, RingBuf},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use scanner_common::{
    Frame, ReplyEvent, ReplyKind,
    frame::{IPPROTO_TCP, TCP_SYN},
    maps::{EVENTS_BYTES, MAX_SCANS, Settings, SlotKey, counter},
    parse_tcp_reply, tcp_cookie,
};

#[map]
static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);
#[map]
static KEYS: Array<SlotKey> = Array::with_max_entries(MAX_SCANS, 0);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

struct Packet<'a>(&'a XdpContext);

impl Frame for Packet<'_> {
    #[inline(always)]
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let ptr = self.0.data() + offset;
        if ptr + N > self.0.data_end() {
            return None;
        }
        // SAFETY: the verifier-visible check above keeps the read inside the packet.
        Some(unsafe { (ptr as *const [u8; N]).read_unaligned() })
    }
}

#[inline(always)]
fn bump(index: u32) {
    if let Some(count) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while we run.
        unsafe { *count += 1 };
    }
}

/// `frags` lets the program attach to jumbo-MTU interfaces in driver mode;
/// headers always sit in the first fragment, which is all it reads.
#[xdp(frags)]
pub fn scanner_xdp(ctx: XdpContext) -> u32 {
    bump(counter::FRAMES);
    classify(&ctx)
}

/// The same program for kernels before 5.18, which know no `frags`.
#[xdp]
pub fn scanner_xdp_single(ctx: XdpContext) -> u32 {
    bump(counter::FRAMES);
    classify(&ctx)
}

#[inline(always)]
fn classify(ctx: &XdpContext) -> u32 {
    let Some(reply) = parse_tcp_reply(&Packet(ctx)) else {
        return xdp_action::XDP_PASS;
    };
    if !reply.is_probe_answer() {
        return xdp_action::XDP_PASS;
    }
    let Some(slot) = SETTINGS.get(0).and_then(|s| s.slot_of(reply.local_port)) else {
        return xdp_action::XDP_PASS;
    };
    let Some(key) = KEYS.get(slot).filter(|k| k.active != 0) else {
        return xdp_action::XDP_PASS;
    };
    let cookie = tcp_cookie(
        &key.key,
        reply.remote,
        reply.local,
        reply.remote_port,
        reply.local_port,
    );
    if reply.ack.wrapping_sub(1) != cookie {
        return xdp_action::XDP_PASS;
    }
    bump(counter::MATCHED);

    let Some(mut entry) = EVENTS.reserve::<ReplyEvent>(0) else {
        bump(counter::RINGBUF_FULL);
        debug!(
            ctx,
            "ring buffer full: reply from port {} lost", reply.remote_port
        );
        // Let the kernel answer it with a RST so the target is not left half-open.
        return xdp_action::XDP_PASS;
    };
    let mut remote = [0u8; 16];
    let mut local = [0u8; 16];
    remote[..4].copy_from_slice(&reply.remote.to_be_bytes());
    local[..4].copy_from_slice(&reply.local.to_be_bytes());
    let kind = if reply.flags & TCP_SYN != 0 {
        ReplyKind::SynAck
    } else {
        ReplyKind::Rst
    };
    entry.write(ReplyEvent {
        remote,
        local,
        remote_port: reply.remote_port,
        local_port: reply.local_port,
        family: 4,
        protocol: IPPROTO_TCP,
        kind: kind as u8,
        slot: slot as u8,
        ttl: reply.ttl,
        _pad: [0; 7],
    });
    entry.submit(0);
    // The agent sends the RST itself: the host's firewall may drop an
    // unsolicited SYN-ACK before the kernel could answer it.
    xdp_action::XDP_DROP
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
