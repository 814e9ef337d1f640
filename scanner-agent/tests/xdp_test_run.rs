//! The XDP program run by the kernel on crafted frames (BPF_PROG_TEST_RUN),
//! no NIC involved.
mod common;

use aya::{
    Ebpf,
    maps::{Array, RingBuf},
    programs::{TestRun as _, TestRunOptions, Xdp},
};
use etherparse::PacketBuilder;
use scanner_agent::capture::PROGRAMS;
use scanner_common::{
    ReplyEvent, ReplyKind,
    maps::{Settings, SlotKey},
    tcp_cookie,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const KEY: [u64; 2] = [0x1234, 0x5678];
const SETTINGS: Settings = Settings {
    port_base: 61000,
    ports_per_slot: 500,
    _pad: 0,
};
const TARGET: [u8; 4] = [198, 18, 0, 2];
const US: [u8; 4] = [198, 18, 0, 1];

fn loaded() -> Ebpf {
    let mut ebpf = scanner_agent::capture::load(SETTINGS).expect("load XDP program");
    let mut keys: Array<_, SlotKey> = Array::try_from(ebpf.map_mut("KEYS").unwrap()).unwrap();
    keys.set(
        1,
        SlotKey {
            key: KEY,
            active: 1,
        },
        0,
    )
    .unwrap();
    // `load` loads the first form the kernel takes; load the other one too,
    // so both forms are tested.
    let single: &mut Xdp = ebpf.program_mut(PROGRAMS[1]).unwrap().try_into().unwrap();
    single.load().unwrap();
    ebpf
}

/// A reply from TARGET:22 to our port 61500 (slot 1) with the given ack.
fn reply(ack: u32, syn: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv4(TARGET, US, 63)
        .tcp(22, 61500, 4242, 65535);
    let b = if syn {
        b.syn().ack(ack)
    } else {
        b.rst().ack(ack)
    };
    let mut out = Vec::new();
    b.write(&mut out, &[]).unwrap();
    out
}

fn cookie() -> u32 {
    tcp_cookie(
        &KEY,
        u32::from_be_bytes(TARGET),
        u32::from_be_bytes(US),
        22,
        61500,
    )
}

/// Runs the program on `frame`; returns the verdict and the frame it left.
fn run_one(ebpf: &Ebpf, program: &str, frame: &[u8]) -> std::io::Result<(u32, Vec<u8>)> {
    let prog: &Xdp = ebpf.program(program).unwrap().try_into().unwrap();
    let mut out = vec![0u8; frame.len() + 64];
    let res = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        })
        .map_err(std::io::Error::other)?;
    out.truncate(res.data_size_out as usize);
    Ok((res.return_value, out))
}

/// Runs both forms of the program on `frame`; they must agree.
fn run(ebpf: &Ebpf, frame: &[u8]) -> std::io::Result<(u32, Vec<u8>)> {
    let first = run_one(ebpf, PROGRAMS[0], frame)?;
    let second = run_one(ebpf, PROGRAMS[1], frame)?;
    assert_eq!(first.0, second.0, "the two program forms disagree");
    Ok(first)
}

fn events(ebpf: &mut Ebpf) -> Vec<ReplyEvent> {
    let mut ring = RingBuf::try_from(ebpf.map_mut("EVENTS").unwrap()).unwrap();
    let mut all = Vec::new();
    while let Some(item) = ring.next() {
        all.push(ReplyEvent::from_bytes(&item).unwrap());
    }
    all
}

#[test]
fn valid_syn_ack_yields_exactly_one_event_per_run_and_is_consumed() {
    let mut ebpf = loaded();
    let (verdict, _) = run(&ebpf, &reply(cookie().wrapping_add(1), true)).unwrap();
    assert_eq!(verdict, XDP_DROP);
    let evs = events(&mut ebpf);
    assert_eq!(evs.len(), 2, "one event per program form");
    assert_eq!(evs[0], evs[1]);
    let e = evs[0];
    assert_eq!((&e.remote[..4], &e.local[..4]), (&TARGET[..], &US[..]));
    assert_eq!(
        (e.remote_port, e.local_port, e.slot, e.ttl),
        (22, 61500, 1, 63)
    );
    assert_eq!(e.kind(), Some(ReplyKind::SynAck));
}

#[test]
fn valid_rst_reports_closed() {
    let mut ebpf = loaded();
    let (verdict, _) = run(&ebpf, &reply(cookie().wrapping_add(1), false)).unwrap();
    assert_eq!(verdict, XDP_DROP);
    let evs = events(&mut ebpf);
    assert_eq!(evs.len(), 2, "one event per program form");
    assert!(evs.iter().all(|e| e.kind() == Some(ReplyKind::Rst)));
}

fn assert_passed_untouched(ebpf: &mut Ebpf, frame: &[u8], what: &str) {
    let (verdict, out) = run(ebpf, frame).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(verdict, XDP_PASS, "{what}");
    assert_eq!(out, frame, "{what}: frame modified");
    assert!(events(ebpf).is_empty(), "{what}: produced an event");
}

#[test]
fn foreign_traffic_passes_untouched() {
    let mut ebpf = loaded();
    assert_passed_untouched(
        &mut ebpf,
        &reply(cookie(), true),
        "wrong cookie (off by one)",
    );
    assert_passed_untouched(&mut ebpf, &reply(0xdead_beef, true), "wrong cookie");
    // Right cookie, but a slot with no scan in flight.
    let mut other_slot = reply(cookie().wrapping_add(1), true);
    other_slot[14 + 20 + 2..14 + 20 + 4].copy_from_slice(&61000u16.to_be_bytes());
    assert_passed_untouched(&mut ebpf, &other_slot, "inactive slot");

    let mut udp = Vec::new();
    PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv4(TARGET, US, 64)
        .udp(53, 61500)
        .write(&mut udp, &[0; 12])
        .unwrap();
    assert_passed_untouched(&mut ebpf, &udp, "udp");
    let mut arp = reply(cookie().wrapping_add(1), true);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_passed_untouched(&mut ebpf, &arp, "arp ethertype");
}

#[test]
fn truncated_frames_pass_untouched() {
    let mut ebpf = loaded();
    let frame = reply(cookie().wrapping_add(1), true);
    for len in 0..frame.len() {
        match run(&ebpf, &frame[..len]) {
            Ok(_) => assert_passed_untouched(&mut ebpf, &frame[..len], &format!("length {len}")),
            // The kernel itself refuses to run XDP on less than an Ethernet header.
            Err(e) => assert!(len < 14, "length {len}: {e}"),
        }
    }
    let (verdict, _) = run(&ebpf, &frame).unwrap();
    assert_eq!(verdict, XDP_DROP, "the untruncated frame is a valid reply");
}
