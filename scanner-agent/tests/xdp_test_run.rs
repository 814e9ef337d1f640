//! The XDP program run by the kernel on crafted frames (BPF_PROG_TEST_RUN),
//! no NIC involved.
mod common;

use aya::{
    Ebpf,
    maps::{Array, RingBuf},
    programs::{TestRun as _, TestRunOptions, Xdp},
};
use std::net::{IpAddr, Ipv6Addr};

use etherparse::PacketBuilder;
use scanner_agent::scan::{capture::PROGRAMS, probes::packets};
use scanner_common::{
    Addr, ReplyEvent, ReplyKind,
    cookie::{echo_data, echo_id_seq, ident_of, payload_secret, probe_hash, seq_of, tag_of},
    maps::{EVENT_RING_NAMES, Settings, SlotKey, protocols},
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
/// 2001:db8::2 and 2001:db8::1.
const TARGET6: [u8; 16] = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2).octets();
const US6: [u8; 16] = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).octets();

const ALL: u64 = protocols::TCP | protocols::UDP | protocols::ICMP;

fn loaded() -> Ebpf {
    loaded_with(ALL)
}

/// The program with a scan sending `protocols` in slot 1.
fn loaded_with(protocols: u64) -> Ebpf {
    let mut ebpf = scanner_agent::scan::capture::load(SETTINGS).expect("load XDP program");
    let mut keys: Array<_, SlotKey> = Array::try_from(ebpf.map_mut("KEYS").unwrap()).unwrap();
    keys.set(
        1,
        SlotKey {
            key: KEY,
            protocols,
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

/// The events of every ring (a test run writes to its CPU's).
fn events(ebpf: &mut Ebpf) -> Vec<ReplyEvent> {
    let mut all = Vec::new();
    for name in EVENT_RING_NAMES {
        let mut ring = RingBuf::try_from(ebpf.map_mut(name).unwrap()).unwrap();
        while let Some(item) = ring.next() {
            all.push(ReplyEvent::from_bytes(&item).unwrap());
        }
    }
    all
}

#[test]
fn valid_syn_ack_yields_exactly_one_event_per_run_and_is_consumed() {
    testbed::require_root!();
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
    testbed::require_root!();
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
    testbed::require_root!();
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
    testbed::require_root!();
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
    testbed::require_root!();
    let mut ebpf = loaded();
    let eth = || PacketBuilder::ethernet2([2; 6], [4; 6]);

    let mut udp = Vec::new();
    eth()
        .ipv4(TARGET, US, 50)
        .udp(22, our_port(17))
        .write(&mut udp, &[1, 2, 3])
        .unwrap();
    let ev = ours(&mut ebpf, &udp);
    assert_eq!(
        (ev.kind(), ev.protocol, ev.remote_port, ev.ttl),
        (Some(ReplyKind::Udp), 17, 22, 50)
    );

    // A router's "admin prohibited" about our SYN, quoting it.
    let mut probe = our_syn(TARGET, 22);
    let icmp = |quoted: &[u8]| icmp_unreach_v4(13, quoted);
    let ev = ours(&mut ebpf, &icmp(&probe[..28]));
    // The TTL is the ICMP error's own (the router's), not the quoted probe's.
    assert_eq!(
        (ev.kind(), ev.icmp_code, ev.remote_port, ev.ttl),
        (Some(ReplyKind::Unreachable), 13, 22, 250)
    );
    assert_eq!(
        &ev.remote[..4],
        &TARGET[..],
        "an ICMP error is keyed by the probed host"
    );
    // The same error quoting a different sequence number is not ours.
    probe[24..28].copy_from_slice(&(cookie() ^ 1).to_be_bytes());
    assert_eq!(&probe[20..22], &our_port(6).to_be_bytes());
    assert_passed_untouched(
        &mut ebpf,
        &icmp(&probe[..28]),
        "icmp error quoting a foreign segment",
    );

    let (id, seq, data) = echo_fields();
    assert_eq!(
        ours(&mut ebpf, &echo_reply(id, seq, data)).kind(),
        Some(ReplyKind::EchoReply)
    );
    assert_passed_untouched(
        &mut ebpf,
        &echo_reply(id, seq ^ 1, data),
        "echo reply with a foreign sequence",
    );
}

/// Identifier, sequence and data of our echo request to TARGET (slot 1).
fn echo_fields() -> (u16, u16, u64) {
    let h = probe_hash(&KEY, &Addr::v4(TARGET), &Addr::v4(US), 0, 1);
    let (id, seq) = echo_id_seq(h, 1);
    (id, seq, echo_data(tag_of(&KEY, h)))
}

fn echo_reply(id: u16, seq: u16, data: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let reply = etherparse::Icmpv4Type::EchoReply(etherparse::IcmpEchoHeader { id, seq });
    PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv4(TARGET, US, 64)
        .icmpv4(reply)
        .write(&mut out, &data.to_be_bytes())
        .unwrap();
    out
}

fn ip(a: [u8; 4]) -> IpAddr {
    IpAddr::from(a)
}

/// Our SYN to `target:port` from slot 1, built by the agent's own code.
fn our_syn(target: [u8; 4], port: u16) -> Vec<u8> {
    let h = probe_hash(&KEY, &Addr::v4(target), &Addr::v4(US), port, 6);
    let ident = ident_of(4, tag_of(&KEY, h));
    let mut buf = [0u8; packets::MAX_PACKET];
    let ports = (local_port(&SETTINGS, 1, h), port);
    let n = packets::syn(&mut buf, (ip(US), ip(target)), ports, seq_of(h), ident);
    buf[..n].to_vec()
}

/// Our UDP probe to TARGET:`port` (with its payload) from slot 1, built by
/// the agent's own code, and the secret its payload carries.
fn our_udp_probe(port: u16) -> (Vec<u8>, u64) {
    let h = probe_hash(&KEY, &Addr::v4(TARGET), &Addr::v4(US), port, 17);
    let tag = tag_of(&KEY, h);
    let secret = payload_secret(h, tag);
    let mut buf = [0u8; packets::MAX_PACKET];
    let ports = (local_port(&SETTINGS, 1, h), port);
    let n = packets::udp(
        &mut buf,
        (ip(US), ip(TARGET)),
        ports,
        ident_of(4, tag),
        secret,
    );
    (buf[..n].to_vec(), secret)
}

/// A UDP datagram from TARGET:`port` to our probe's local port.
fn udp_answer(port: u16, payload: &[u8]) -> Vec<u8> {
    let h = probe_hash(&KEY, &Addr::v4(TARGET), &Addr::v4(US), port, 17);
    let mut out = Vec::new();
    PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv4(TARGET, US, 64)
        .udp(port, local_port(&SETTINGS, 1, h))
        .write(&mut out, payload)
        .unwrap();
    out
}

/// An ICMP destination unreachable with `code` from a router, quoting `quoted`.
fn icmp_unreach_v4(code: u8, quoted: &[u8]) -> Vec<u8> {
    let unreach = etherparse::Icmpv4Type::DestinationUnreachable(
        etherparse::icmpv4::DestUnreachableHeader::from_values(code, 0).unwrap(),
    );
    let mut out = Vec::new();
    PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv4([198, 18, 0, 254], US, 250)
        .icmpv4(unreach)
        .write(&mut out, quoted)
        .unwrap();
    out
}

/// Rewrites the identification of the IPv4 packet `p` (fixing its checksum).
fn set_ip_id(p: &mut [u8], id: u16) {
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[10..12].fill(0);
    let sum = scanner_common::checksum::fold(scanner_common::checksum::sum_words(0, &p[..20]));
    p[10..12].copy_from_slice(&sum.to_be_bytes());
}

/// A service's answer to `request` that echoes its id (as a real server's
/// would), or a copy of the request for services that echo none.
fn answer_to(port: u16, request: &[u8]) -> Vec<u8> {
    match port {
        // A DNS answer: the header with QR set, the question, one TXT record.
        53 => {
            let mut a = request.to_vec();
            a[2] |= 0x80;
            a[7] = 1;
            a.extend_from_slice(b"\xc0\x0c\x00\x10\x00\x03\x00\x00\x00\x00\x00\x04\x039.1");
            a
        }
        // NTP: a server reply with our transmit timestamp as its origin.
        123 => {
            let mut a = [0u8; 48];
            a[0] = 0x24;
            a[24..32].copy_from_slice(&request[40..48]);
            a.to_vec()
        }
        // SNMP: a GetResponse (0xa2) with a long sysDescr, so the lengths
        // take the long BER form.
        161 => {
            let descr = [b'L'; 300];
            let id = &request[15..21];
            let mut varbind = vec![
                0x06, 0x08, 0x2b, 6, 1, 2, 1, 1, 1, 0, 0x04, 0x82, 0x01, 0x2c,
            ];
            varbind.extend_from_slice(&descr);
            let mut list = vec![0x30, 0x82];
            list.extend_from_slice(&((varbind.len() + 4) as u16).to_be_bytes());
            list.extend_from_slice(&[0x30, 0x82]);
            list.extend_from_slice(&(varbind.len() as u16).to_be_bytes());
            list.extend_from_slice(&varbind);
            let mut pdu = id.to_vec();
            pdu.extend_from_slice(&[0x02, 0x01, 0x00, 0x02, 0x01, 0x00]);
            pdu.extend_from_slice(&list);
            let mut msg = vec![0x02, 0x01, 0x00, 0x04, 0x06];
            msg.extend_from_slice(b"public");
            msg.extend_from_slice(&[0xa2, 0x82]);
            msg.extend_from_slice(&(pdu.len() as u16).to_be_bytes());
            msg.extend_from_slice(&pdu);
            let mut a = vec![0x30, 0x82];
            a.extend_from_slice(&(msg.len() as u16).to_be_bytes());
            a.extend_from_slice(&msg);
            a
        }
        // NetBIOS node status response: the transaction id, then the rest.
        137 => {
            let mut a = request[..2].to_vec();
            a.extend_from_slice(&[0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
            a.extend_from_slice(&request[12..]);
            a
        }
        // memcached: the request id, sequence 0 of 1, then the stats.
        11211 => {
            let mut a = request[..2].to_vec();
            a.extend_from_slice(b"\x00\x00\x00\x01\x00\x00STAT pid 1\r\nEND\r\n");
            a
        }
        _ => b"HTTP/1.1 200 OK\r\n\r\n".to_vec(),
    }
}

#[test]
fn udp_answers_must_echo_the_request_id_of_their_service() {
    testbed::require_root!();
    let mut ebpf = loaded();
    // (port, verified when the id is right)
    for (port, verified) in [
        (53, 1),
        (123, 1),
        (161, 1),
        (137, 0),
        (11211, 0),
        (1900, 0),
        (7000, 0),
    ] {
        let (probe, _) = our_udp_probe(port);
        let request = &probe[28..];
        let answer = answer_to(port, request);
        let ev = ours(&mut ebpf, &udp_answer(port, &answer));
        assert_eq!(
            (ev.kind(), ev.remote_port, ev.verified),
            (Some(ReplyKind::Udp), port, verified),
            "port {port}"
        );
        // The same answer, from the same port to the same local port, with
        // one bit of the echoed id flipped: not an answer to our probe.
        let id_at = match port {
            53 | 137 | 11211 => Some(1),
            123 => Some(31),
            161 => answer
                .windows(2)
                .position(|w| w == [0x02, 0x04])
                .map(|i| i + 5),
            _ => None,
        };
        if let Some(i) = id_at {
            let mut spoofed = answer.clone();
            spoofed[i] ^= 1;
            assert_passed_untouched(
                &mut ebpf,
                &udp_answer(port, &spoofed),
                &format!("port {port}: answer with a wrong request id"),
            );
        }
    }
    // DNS from a server that lower-cases the question: the id alone, not verified.
    let (probe, _) = our_udp_probe(53);
    let mut lower = answer_to(53, &probe[28..]);
    lower[12..26].make_ascii_lowercase();
    if lower[12..26] != probe[28 + 12..28 + 26] {
        assert_eq!(ours(&mut ebpf, &udp_answer(53, &lower)).verified, 0);
    }
}

#[test]
fn icmp_errors_must_quote_the_probes_ip_id_and_checksum() {
    testbed::require_root!();
    let mut ebpf = loaded();
    let syn = our_syn(TARGET, 22);
    let ev = ours(&mut ebpf, &icmp_unreach_v4(13, &syn[..28]));
    assert_eq!((ev.protocol, ev.verified), (6, 1));
    // Right ports and sequence number, another IP ID.
    let mut spoofed = syn.clone();
    set_ip_id(&mut spoofed, u16::from_be_bytes([syn[4], syn[5]]) ^ 0x0400);
    assert_passed_untouched(
        &mut ebpf,
        &icmp_unreach_v4(13, &spoofed[..28]),
        "icmp error quoting our SYN with a wrong IP ID",
    );

    for port in [53, 123, 137, 161, 1900, 11211, 7000] {
        let (probe, _) = our_udp_probe(port);
        // Port unreachable quoting the whole probe, and a router's error
        // quoting only 8 bytes of it.
        for quoted in [&probe[..], &probe[..28]] {
            let ev = ours(&mut ebpf, &icmp_unreach_v4(3, quoted));
            assert_eq!(
                (ev.kind(), ev.protocol, ev.remote_port, ev.icmp_code),
                (Some(ReplyKind::Unreachable), 17, port, 3)
            );
        }
        let mut spoofed = probe.clone();
        set_ip_id(&mut spoofed, u16::from_be_bytes([probe[4], probe[5]]) ^ 1);
        assert_passed_untouched(
            &mut ebpf,
            &icmp_unreach_v4(3, &spoofed[..28]),
            &format!("port {port}: port unreachable with a wrong IP ID"),
        );
        let mut spoofed = probe.clone();
        spoofed[26] ^= 0x10;
        assert_passed_untouched(
            &mut ebpf,
            &icmp_unreach_v4(3, &spoofed[..28]),
            &format!("port {port}: port unreachable with a wrong UDP checksum"),
        );
    }
}

#[test]
fn icmpv6_errors_must_quote_the_probes_flow_label() {
    testbed::require_root!();
    let mut ebpf = loaded();
    let (t6, u6) = (TARGET6, US6);
    for (protocol, port) in [(17, 53), (17, 5000), (6, 443)] {
        let h = probe_hash(&KEY, &Addr::v6(t6), &Addr::v6(u6), port, protocol);
        let tag = tag_of(&KEY, h);
        let label = ident_of(6, tag);
        let ports = (local_port(&SETTINGS, 1, h), port);
        let addrs = (IpAddr::from(u6), IpAddr::from(t6));
        let probe = |label| {
            let mut buf = [0u8; packets::MAX_PACKET];
            let n = if protocol == 17 {
                packets::udp(&mut buf, addrs, ports, label, payload_secret(h, tag))
            } else {
                packets::syn(&mut buf, addrs, ports, seq_of(h), label)
            };
            buf[..n].to_vec()
        };
        let error = |quoted: &[u8]| {
            let mut out = Vec::new();
            PacketBuilder::ethernet2([2; 6], [4; 6])
                .ipv6(t6, u6, 64)
                .icmpv6(etherparse::Icmpv6Type::DestinationUnreachable(
                    etherparse::icmpv6::DestUnreachableCode::Prohibited,
                ))
                .write(&mut out, quoted)
                .unwrap();
            out
        };
        let ev = ours(&mut ebpf, &error(&probe(label)));
        assert_eq!(
            (ev.family, ev.protocol, ev.remote_port, ev.icmp_code),
            (6, protocol, port, 1)
        );
        for wrong in [label ^ 1, label ^ 0x8_0000] {
            assert_passed_untouched(
                &mut ebpf,
                &error(&probe(wrong)),
                &format!("{protocol}/{port}: icmpv6 error with a wrong flow label"),
            );
        }
    }
}

#[test]
fn echo_replies_must_echo_the_requests_data() {
    testbed::require_root!();
    let mut ebpf = loaded();
    let (id, seq, data) = echo_fields();
    assert_eq!(
        ours(&mut ebpf, &echo_reply(id, seq, data)).kind(),
        Some(ReplyKind::EchoReply)
    );
    for wrong in [data ^ 1, data ^ (1 << 63), 0] {
        assert_passed_untouched(
            &mut ebpf,
            &echo_reply(id, seq, wrong),
            "echo reply with foreign data",
        );
    }
    let mut short = echo_reply(id, seq, data);
    short.truncate(short.len() - 1);
    let ip_len = (short.len() - 14) as u16;
    short[16..18].copy_from_slice(&ip_len.to_be_bytes());
    assert_passed_untouched(&mut ebpf, &short, "echo reply with 7 data bytes");
}

#[test]
fn replies_of_protocols_the_scan_does_not_send_pass() {
    testbed::require_root!();
    // A TCP-only scan in slot 1: valid-looking UDP answers, ICMP errors
    // quoting UDP probes and echo replies to the slot are someone else's.
    let mut ebpf = loaded_with(protocols::TCP);
    let (probe, _) = our_udp_probe(7000);
    for (frame, what) in [
        (udp_answer(7000, b"hi"), "udp to a port of a TCP-only slot"),
        (
            icmp_unreach_v4(3, &probe),
            "icmp error quoting udp, TCP-only slot",
        ),
    ] {
        assert_passed_untouched(&mut ebpf, &frame, what);
    }
    let (id, seq, data) = echo_fields();
    assert_passed_untouched(
        &mut ebpf,
        &echo_reply(id, seq, data),
        "echo reply, TCP-only slot",
    );
    assert_eq!(
        ours(&mut ebpf, &reply(cookie().wrapping_add(1), true)).kind(),
        Some(ReplyKind::SynAck)
    );
    // A UDP-only scan takes no TCP answer.
    let mut ebpf = loaded_with(protocols::UDP);
    assert_passed_untouched(
        &mut ebpf,
        &reply(cookie().wrapping_add(1), true),
        "syn-ack to a UDP-only slot",
    );
    assert_eq!(
        ours(&mut ebpf, &udp_answer(7000, b"hi")).kind(),
        Some(ReplyKind::Udp)
    );
}

#[test]
fn ipv6_syn_ack_is_ours() {
    testbed::require_root!();
    let mut ebpf = loaded();
    let (t6, u6) = (TARGET6, US6);
    let h = probe_hash(&KEY, &Addr::v6(t6), &Addr::v6(u6), 443, 6);
    let port = local_port(&SETTINGS, 1, h);
    let mut frame = Vec::new();
    PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv6(t6, u6, 57)
        .tcp(443, port, 1, 65535)
        .syn()
        .ack(seq_of(h).wrapping_add(1))
        .write(&mut frame, &[])
        .unwrap();
    assert_eq!(run(&ebpf, &frame).unwrap().0, XDP_DROP);
    let evs = events(&mut ebpf);
    assert_eq!(evs.len(), 2);
    // The hop limit the reply arrived with, for NDJSON's `ttl`.
    assert_eq!(
        (evs[0].family, evs[0].remote, evs[0].kind(), evs[0].ttl),
        (6, t6, Some(ReplyKind::SynAck), 57)
    );
    frame[14 + 40 + 8..14 + 40 + 12].copy_from_slice(&seq_of(h).to_be_bytes());
    assert_passed_untouched(&mut ebpf, &frame, "ipv6 syn-ack with a wrong ack");
}
