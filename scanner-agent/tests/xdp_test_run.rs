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
    Addr, ReplyEvent, ReplyKind,
    cookie::{echo_id_seq, probe_hash, seq_of},
    maps::{Settings, SlotKey},
    reply::local_port,
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

/// The hash of our probe to TARGET:22 over `protocol`.
fn hash(protocol: u8) -> u64 {
    probe_hash(&KEY, &Addr::v4(TARGET), &Addr::v4(US), 22, protocol)
}

/// The local port our probe to TARGET:22 used (slot 1).
fn our_port(protocol: u8) -> u16 {
    local_port(&SETTINGS, 1, hash(protocol))
}

fn cookie() -> u32 {
    seq_of(hash(6))
}

/// A reply from TARGET:22 to our probe's port with the given ack.
fn reply(ack: u32, syn: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv4(TARGET, US, 63)
        .tcp(22, our_port(6), 4242, 65535);
    let b = if syn {
        b.syn().ack(ack)
    } else {
        b.rst().ack(ack)
    };
    let mut out = Vec::new();
    b.write(&mut out, &[]).unwrap();
    out
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
        (22, our_port(6), 1, 63)
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
    // Right cookie, but to a port of slot 0, which has no scan in flight.
    let mut other_slot = reply(cookie().wrapping_add(1), true);
    other_slot[14 + 20 + 2..14 + 20 + 4].copy_from_slice(&(our_port(6) - 500).to_be_bytes());
    assert_passed_untouched(&mut ebpf, &other_slot, "inactive slot");

    let mut udp = Vec::new();
    PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv4(TARGET, US, 64)
        .udp(22, our_port(17) ^ 1)
        .write(&mut udp, &[0; 12])
        .unwrap();
    assert_passed_untouched(&mut ebpf, &udp, "udp to a port no probe used");
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

/// Runs `frame` through both program forms; it must be consumed and yield
/// one identical event per form, which is returned.
fn ours(ebpf: &mut Ebpf, frame: &[u8]) -> ReplyEvent {
    assert_eq!(run(ebpf, frame).unwrap().0, XDP_DROP);
    let evs = events(ebpf);
    assert_eq!(evs.len(), 2, "one event per program form");
    assert_eq!(evs[0], evs[1]);
    evs[0]
}

#[test]
fn udp_answers_icmp_errors_and_echo_replies_are_ours() {
    let mut ebpf = loaded();
    let eth = || PacketBuilder::ethernet2([2; 6], [4; 6]);

    let mut udp = Vec::new();
    eth()
        .ipv4(TARGET, US, 64)
        .udp(22, our_port(17))
        .write(&mut udp, &[1, 2, 3])
        .unwrap();
    let ev = ours(&mut ebpf, &udp);
    assert_eq!(
        (ev.kind(), ev.protocol, ev.remote_port),
        (Some(ReplyKind::Udp), 17, 22)
    );

    // A router's "admin prohibited" about our SYN, quoting it.
    let mut probe = Vec::new();
    PacketBuilder::ipv4(US, TARGET, 64)
        .tcp(our_port(6), 22, cookie(), 1024)
        .syn()
        .write(&mut probe, &[])
        .unwrap();
    let icmp = |quoted: &[u8]| {
        let unreach = etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::from_values(13, 0).unwrap(),
        );
        let mut out = Vec::new();
        eth()
            .ipv4([198, 18, 0, 254], US, 64)
            .icmpv4(unreach)
            .write(&mut out, quoted)
            .unwrap();
        out
    };
    let ev = ours(&mut ebpf, &icmp(&probe[..28]));
    assert_eq!(
        (ev.kind(), ev.icmp_code, ev.remote_port),
        (Some(ReplyKind::Unreachable), 13, 22)
    );
    assert_eq!(
        &ev.remote[..4],
        &TARGET[..],
        "an ICMP error is keyed by the probed host"
    );
    // The same error quoting a different sequence number is not ours.
    probe[24..28].copy_from_slice(&(cookie() ^ 1).to_be_bytes());
    assert_passed_untouched(
        &mut ebpf,
        &icmp(&probe[..28]),
        "icmp error quoting a foreign segment",
    );

    let (id, seq) = echo_id_seq(probe_hash(&KEY, &Addr::v4(TARGET), &Addr::v4(US), 0, 1), 1);
    let echo = |id, seq| {
        let mut out = Vec::new();
        let reply = etherparse::Icmpv4Type::EchoReply(etherparse::IcmpEchoHeader { id, seq });
        eth()
            .ipv4(TARGET, US, 64)
            .icmpv4(reply)
            .write(&mut out, &[])
            .unwrap();
        out
    };
    assert_eq!(
        ours(&mut ebpf, &echo(id, seq)).kind(),
        Some(ReplyKind::EchoReply)
    );
    assert_passed_untouched(
        &mut ebpf,
        &echo(id, seq ^ 1),
        "echo reply with a foreign sequence",
    );
}

#[test]
fn ipv6_syn_ack_is_ours() {
    let mut ebpf = loaded();
    let (t6, u6): ([u8; 16], [u8; 16]) = (
        "2001:db8::2"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
        "2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    let h = probe_hash(&KEY, &Addr::v6(t6), &Addr::v6(u6), 443, 6);
    let port = local_port(&SETTINGS, 1, h);
    let mut frame = Vec::new();
    PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv6(t6, u6, 64)
        .tcp(443, port, 1, 65535)
        .syn()
        .ack(seq_of(h).wrapping_add(1))
        .write(&mut frame, &[])
        .unwrap();
    assert_eq!(run(&ebpf, &frame).unwrap().0, XDP_DROP);
    let evs = events(&mut ebpf);
    assert_eq!(evs.len(), 2);
    assert_eq!(
        (evs[0].family, evs[0].remote, evs[0].kind()),
        (6, t6, Some(ReplyKind::SynAck))
    );
    frame[14 + 40 + 8..14 + 40 + 12].copy_from_slice(&seq_of(h).to_be_bytes());
    assert_passed_untouched(&mut ebpf, &frame, "ipv6 syn-ack with a wrong ack");
}
