//! XDP program: recognises replies to the agent's probes (TCP answers, UDP
//! answers, ICMP errors quoting a probe, echo replies) by their keyed
//! cookie, for the protocols the scan of their slot sends, pushes them to
//! the agent through a ring buffer and consumes them; every other frame
//! passes untouched. Parsing and validation live in
//! `scanner-common`, where they are unit-tested on the host.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_get_smp_processor_id,
    macros::{map, xdp},
    maps::{Array, PerCpuArray, RingBuf},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use scanner_common::{
    Frame, ReplyEvent, frame,
    maps::{EVENT_RINGS, EVENTS_BYTES, MAX_SCANS, Settings, SlotKey, counter},
    reply,
};

#[map]
static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);
#[map]
static KEYS: Array<SlotKey> = Array::with_max_entries(MAX_SCANS, 0);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);
// One ring per CPU (modulo `EVENT_RINGS`): see `scanner_common::maps`.
#[map]
static EVENTS0: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);
#[map]
static EVENTS1: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);
#[map]
static EVENTS2: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);
#[map]
static EVENTS3: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// This CPU's event ring.
#[inline(always)]
fn events() -> &'static RingBuf {
    // SAFETY: a helper without arguments or memory effects.
    match unsafe { bpf_get_smp_processor_id() } % EVENT_RINGS {
        0 => &EVENTS0,
        1 => &EVENTS1,
        2 => &EVENTS2,
        _ => &EVENTS3,
    }
}

/// Per-CPU scratch space: the parsed packet and the event would overflow the
/// 512-byte BPF stack.
struct Scratch {
    packet: frame::Packet,
    event: ReplyEvent,
}

#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// The frame's bounds, read from the context once. Held as `usize` so the
/// parser, a separate BPF function, gets them as full 64-bit packet pointers.
struct Packet {
    start: usize,
    end: usize,
}

impl Frame for Packet {
    #[inline(always)]
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let ptr = self.start + offset;
        if ptr + N > self.end {
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
    classify(&ctx)
}

/// The same program for kernels before 5.18, which know no `frags`.
#[xdp]
pub fn scanner_xdp_single(ctx: XdpContext) -> u32 {
    classify(&ctx)
}

#[inline(always)]
fn classify(ctx: &XdpContext) -> u32 {
    bump(counter::FRAMES);
    let (Some(scratch), Some(settings)) = (SCRATCH.get_ptr_mut(0), SETTINGS.get(0)) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: per-CPU scratch, used by this CPU only while the program runs.
    let Scratch { packet, event } = unsafe { &mut *scratch };
    if !frame::parse_into(
        &Packet {
            start: ctx.data(),
            end: ctx.data_end(),
        },
        packet,
    ) {
        return xdp_action::XDP_PASS;
    }
    // A slot with no protocols has no scan; `validate` takes only replies
    // of the protocols the slot's scan sends.
    let slots = |slot| KEYS.get(slot).filter(|k| k.protocols != 0).copied();
    if !reply::validate_into(packet, settings, slots, event) {
        return xdp_action::XDP_PASS;
    }
    bump(counter::MATCHED);
    let Some(mut entry) = events().reserve::<ReplyEvent>(0) else {
        bump(counter::RINGBUF_FULL);
        debug!(
            ctx,
            "ring buffer full: reply from port {} lost", event.remote_port
        );
        // Let the kernel answer it (a RST for a SYN-ACK) so the target is not left half-open.
        return xdp_action::XDP_PASS;
    };
    entry.write(*event);
    entry.submit(0);
    // The agent sends the RST for a SYN-ACK itself: the host's firewall may
    // drop an unsolicited SYN-ACK before the kernel could answer it.
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
