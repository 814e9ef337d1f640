//! Deciding whether a packet answers one of our probes: the whole check the
//! XDP program runs, kept here so it is tested on the host.
//!
//! What each kind of reply must match (beyond its addresses, which the hash
//! covers, and a local port in the slot of an active scan that sends probes
//! of its protocol):
//!
//! | reply | checked against the probe's secrets |
//! |---|---|
//! | TCP SYN-ACK / RST | local port, acknowledgement number = sequence number + 1 |
//! | UDP answer | local port, and the request id the service echoes ([`payload::check_answer`]) |
//! | ICMP error quoting TCP | quoted local port, sequence number, IPv4 identification / IPv6 flow label |
//! | ICMP error quoting UDP | quoted local port, IPv4 identification / IPv6 flow label, UDP length and checksum |
//! | echo reply | identifier (slot and 13 hash bits), sequence number, 8 data bytes |

use crate::{
    cookie::{
        Addr, ProbeKey, echo_data, echo_id_seq, ident_of, payload_secret, port_offset_of,
        probe_hash, seq_of, tag_of,
    },
    event::{ReplyEvent, ReplyKind},
    frame::{
        IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Packet, Quoted, TCP_ACK, TCP_RST,
        TCP_SYN, Transport,
    },
    maps::{Settings, SlotKey, protocols},
    payload::{self, AnswerCheck},
};

/// The local port a probe to `remote:remote_port` uses in `slot`. The
/// agent lays the slots out inside the port space; with settings that do
/// not fit (only a forged map could hold them) the port wraps, as the XDP
/// program's arithmetic does, instead of panicking on the host.
#[inline(always)]
pub fn local_port(settings: &Settings, slot: u32, hash: u64) -> u16 {
    settings
        .port_base
        .wrapping_add((slot as u16).wrapping_mul(settings.ports_per_slot))
        .wrapping_add(port_offset_of(hash, settings.ports_per_slot))
}

/// The [`protocols`] bit of an IP protocol number.
#[inline(always)]
const fn protocol_bit(protocol: u8) -> u64 {
    match protocol {
        IPPROTO_TCP => protocols::TCP,
        IPPROTO_UDP => protocols::UDP,
        IPPROTO_ICMP | IPPROTO_ICMPV6 => protocols::ICMP,
        _ => 0,
    }
}

/// The slot, key and probe hash of a flow, if `local_port_seen` is the
/// port our probe of that flow used, in the slot of a scan that sends
/// probes of `protocol`.
#[inline(always)]
fn probe_flow<S: Into<SlotKey>>(
    settings: &Settings,
    slots: &impl Fn(u32) -> Option<S>,
    remote: &Addr,
    local: &Addr,
    remote_port: u16,
    local_port_seen: u16,
    protocol: u8,
) -> Option<(u32, ProbeKey, u64)> {
    let slot = settings.slot_of(local_port_seen)?;
    let k: SlotKey = slots(slot)?.into();
    if !k.sends(protocol_bit(protocol)) {
        return None;
    }
    let hash = probe_hash(&k.key, remote, local, remote_port, protocol);
    (local_port(settings, slot, hash) == local_port_seen).then_some((slot, k.key, hash))
}

/// SYN-ACK, or RST with ACK: the two answers a SYN can get.
#[inline(always)]
fn answers_syn(flags: u8) -> Option<ReplyKind> {
    match flags & (TCP_SYN | TCP_ACK | TCP_RST) {
        f if f == TCP_SYN | TCP_ACK => Some(ReplyKind::SynAck),
        f if f == TCP_RST | TCP_ACK => Some(ReplyKind::Rst),
        _ => None,
    }
}

/// The UDP checksum of our probe from `q.src:q.src_port` to
/// `q.dst:q.dst_port` whose payload has length `len` and sum `payload_sum`.
#[inline(always)]
fn udp_probe_checksum(q: &Quoted, len: u16, payload_sum: u32) -> u16 {
    let udp_len = 8 + u32::from(len);
    let words = if q.src.family == 4 { 2 } else { 8 };
    let mut sum = 0u32;
    let mut i = 0;
    while i < 8 {
        if i < words {
            sum += u32::from(u16::from_be_bytes([
                q.src.bytes[2 * i],
                q.src.bytes[2 * i + 1],
            ]));
            sum += u32::from(u16::from_be_bytes([
                q.dst.bytes[2 * i],
                q.dst.bytes[2 * i + 1],
            ]));
        }
        i += 1;
    }
    sum += u32::from(IPPROTO_UDP) + udp_len;
    sum += u32::from(q.src_port) + u32::from(q.dst_port) + udp_len;
    match crate::checksum::fold(sum + payload_sum) {
        0 => 0xffff,
        c => c,
    }
}

/// Whether the quoted header is our probe with hash `hash`, beyond its port.
#[inline(always)]
fn quotes_probe(q: &Quoted, key: &ProbeKey, hash: u64) -> bool {
    let tag = tag_of(key, hash);
    if q.ident != ident_of(q.src.family, tag) {
        return false;
    }
    if q.protocol == IPPROTO_TCP {
        return q.seq == seq_of(hash);
    }
    let (len, sum) = payload::probe_len_and_sum(q.dst_port, payload_secret(hash, tag));
    q.udp_len == 8 + len && q.udp_check == udp_probe_checksum(q, len, sum)
}

/// The event for `packet` if it answers a probe of a scan whose slot
/// `slots(slot)` describes (`None` or no protocols: no scan), else `None`.
/// `slots` may return a [`SlotKey`], or a bare [`ProbeKey`] for a scan
/// sending every protocol.
#[inline(always)]
pub fn validate<S: Into<SlotKey>>(
    packet: &Packet,
    settings: &Settings,
    slots: impl Fn(u32) -> Option<S>,
) -> Option<ReplyEvent> {
    let mut ev = ReplyEvent {
        remote: packet.src.bytes,
        local: packet.dst.bytes,
        remote_port: 0,
        local_port: 0,
        family: packet.src.family,
        protocol: 0,
        kind: 0,
        slot: 0,
        ttl: packet.ttl,
        icmp_type: 0,
        icmp_code: 0,
        verified: 1,
        _pad: [0; 4],
    };
    let (slot, kind) = match packet.transport {
        Transport::Tcp {
            src_port,
            dst_port,
            ack,
            flags,
            ..
        } => {
            let kind = answers_syn(flags)?;
            let (slot, _, hash) = probe_flow(
                settings,
                &slots,
                &packet.src,
                &packet.dst,
                src_port,
                dst_port,
                IPPROTO_TCP,
            )?;
            if ack.wrapping_sub(1) != seq_of(hash) {
                return None;
            }
            (ev.remote_port, ev.local_port, ev.protocol) = (src_port, dst_port, IPPROTO_TCP);
            (slot, kind)
        }
        Transport::Udp {
            src_port,
            dst_port,
            payload,
            payload_len,
        } => {
            let (slot, key, hash) = probe_flow(
                settings,
                &slots,
                &packet.src,
                &packet.dst,
                src_port,
                dst_port,
                IPPROTO_UDP,
            )?;
            let secret = payload_secret(hash, tag_of(&key, hash));
            ev.verified =
                match payload::check_answer(src_port, secret, &payload, usize::from(payload_len)) {
                    AnswerCheck::Foreign => return None,
                    AnswerCheck::Unverified => 0,
                    AnswerCheck::Verified => 1,
                };
            (ev.remote_port, ev.local_port, ev.protocol) = (src_port, dst_port, IPPROTO_UDP);
            (slot, ReplyKind::Udp)
        }
        Transport::Unreachable {
            icmp_type,
            code,
            quoted: q,
        } => {
            if q.protocol != IPPROTO_TCP && q.protocol != IPPROTO_UDP {
                return None;
            }
            let (slot, key, hash) = probe_flow(
                settings, &slots, &q.dst, &q.src, q.dst_port, q.src_port, q.protocol,
            )?;
            if !quotes_probe(&q, &key, hash) {
                return None;
            }
            ev.remote = q.dst.bytes;
            ev.local = q.src.bytes;
            (ev.remote_port, ev.local_port, ev.protocol) = (q.dst_port, q.src_port, q.protocol);
            (ev.icmp_type, ev.icmp_code) = (icmp_type, code);
            (slot, ReplyKind::Unreachable)
        }
        Transport::EchoReply { id, seq, data } => {
            let slot = u32::from(id >> 13);
            let protocol = if packet.src.family == 4 {
                IPPROTO_ICMP
            } else {
                IPPROTO_ICMPV6
            };
            let k: SlotKey = slots(slot)?.into();
            if !k.sends(protocols::ICMP) {
                return None;
            }
            let hash = probe_hash(&k.key, &packet.src, &packet.dst, 0, protocol);
            if echo_id_seq(hash, slot) != (id, seq) || data != echo_data(tag_of(&k.key, hash)) {
                return None;
            }
            ev.protocol = protocol;
            (slot, ReplyKind::EchoReply)
        }
    };
    ev.slot = slot as u8;
    ev.kind = kind as u8;
    Some(ev)
}

/// [`validate`] for the XDP program, as a separate BPF function writing into
/// `out` (see [`crate::frame::parse_into`]).
#[cfg_attr(target_arch = "bpf", inline(never))]
pub fn validate_into<S: Into<SlotKey>>(
    packet: &Packet,
    settings: &Settings,
    slots: impl Fn(u32) -> Option<S>,
    out: &mut ReplyEvent,
) -> bool {
    match validate(packet, settings, slots) {
        Some(ev) => {
            *out = ev;
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Quoted;

    const KEY: ProbeKey = [3, 4];
    const S: Settings = Settings {
        port_base: 61000,
        ports_per_slot: 500,
        _pad: 0,
    };
    const REMOTE: Addr = Addr::v4([198, 18, 0, 2]);
    const LOCAL: Addr = Addr::v4([198, 18, 0, 1]);

    /// Found by the `frame_reply` fuzz target: a port layout past 65535
    /// overflowed (a panic in a debug build).
    #[test]
    fn a_layout_past_the_port_space_wraps_instead_of_panicking() {
        let s = Settings {
            port_base: 61_000,
            ports_per_slot: 4096,
            _pad: 0,
        };
        let port = local_port(&s, 7, 0);
        assert_eq!(port, 61_000_u16.wrapping_add(7 * 4096));
    }

    fn keys(slot: u32) -> Option<ProbeKey> {
        (slot == 2).then_some(KEY)
    }

    extern crate std;
    use crate::frame;
    use etherparse::{IcmpEchoHeader, Icmpv4Type, Icmpv6Type, PacketBuilder, icmpv4, icmpv6};
    use std::vec::Vec;

    const REMOTE6: Addr = Addr::v6([0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    const LOCAL6: Addr = Addr::v6([0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);

    #[test]
    fn a_bare_key_stands_for_a_scan_of_every_protocol() {
        let k = SlotKey::from(KEY);
        assert_eq!(k.key, KEY);
        for p in [protocols::TCP, protocols::UDP, protocols::ICMP] {
            assert!(k.sends(p));
        }
    }

    /// Slot 2 in use by a scan sending `protocols`.
    fn only(protocols: u64) -> impl Fn(u32) -> Option<SlotKey> {
        move |slot| {
            (slot == 2).then_some(SlotKey {
                key: KEY,
                protocols,
            })
        }
    }

    fn flow(protocol: u8) -> (u16, u64) {
        flow_to(&REMOTE, &LOCAL, 443, protocol)
    }

    fn flow_to(remote: &Addr, local: &Addr, port: u16, protocol: u8) -> (u16, u64) {
        let hash = probe_hash(&KEY, remote, local, port, protocol);
        (local_port(&S, 2, hash), hash)
    }

    fn tcp(flags: u8, ack: u32, dst_port: u16) -> Packet {
        Packet {
            src: REMOTE,
            dst: LOCAL,
            ttl: 60,
            transport: Transport::Tcp {
                src_port: 443,
                dst_port,
                seq: 9,
                ack,
                flags,
            },
        }
    }

    #[test]
    fn tcp_answers_need_port_and_cookie() {
        let (port, hash) = flow(IPPROTO_TCP);
        assert!((61000 + 2 * 500..61000 + 3 * 500).contains(&port));
        let ok = validate(&tcp(TCP_SYN | TCP_ACK, seq_of(hash) + 1, port), &S, keys).unwrap();
        assert_eq!(
            (
                ok.kind(),
                ok.slot,
                ok.remote_port,
                ok.local_port,
                ok.verified
            ),
            (Some(ReplyKind::SynAck), 2, 443, port, 1)
        );
        let rst = validate(&tcp(TCP_RST | TCP_ACK, seq_of(hash) + 1, port), &S, keys).unwrap();
        assert_eq!(rst.kind(), Some(ReplyKind::Rst));
        assert!(validate(&tcp(TCP_SYN | TCP_ACK, seq_of(hash), port), &S, keys).is_none());
        assert!(
            validate(
                &tcp(TCP_SYN | TCP_ACK, seq_of(hash) + 1, port + 1),
                &S,
                keys
            )
            .is_none()
        );
        assert!(validate(&tcp(TCP_SYN, seq_of(hash) + 1, port), &S, keys).is_none());
        assert!(validate(&tcp(TCP_RST, seq_of(hash) + 1, port), &S, keys).is_none());
        assert!(
            validate(&tcp(TCP_SYN | TCP_ACK, seq_of(hash) + 1, port), &S, |_| {
                None::<ProbeKey>
            })
            .is_none()
        );
    }

    fn udp_packet(src_port: u16, dst_port: u16, answer: &[u8]) -> Packet {
        let mut payload = [0u8; payload::ANSWER_PREFIX];
        let n = answer.len().min(payload.len());
        payload[..n].copy_from_slice(&answer[..n]);
        Packet {
            src: REMOTE,
            dst: LOCAL,
            ttl: 60,
            transport: Transport::Udp {
                src_port,
                dst_port,
                payload,
                payload_len: n as u8,
            },
        }
    }

    /// The payload of our probe to REMOTE:`port` (UDP), as the agent sends it.
    fn probe_payload(port: u16) -> (u16, Vec<u8>) {
        let (local, hash) = flow_to(&REMOTE, &LOCAL, port, IPPROTO_UDP);
        let mut buf = [0u8; payload::MAX_LEN];
        let n = payload::write(port, payload_secret(hash, tag_of(&KEY, hash)), &mut buf);
        (local, buf[..n].to_vec())
    }

    #[test]
    fn udp_answers_need_the_port_and_the_echoed_id() {
        // A service without request ids: the port alone, unverified.
        let (port, _) = flow(IPPROTO_UDP);
        let ev = validate(&udp_packet(443, port, b"hello"), &S, keys).unwrap();
        assert_eq!((ev.kind(), ev.verified), (Some(ReplyKind::Udp), 0));
        assert!(validate(&udp_packet(443, port ^ 1, b"hello"), &S, keys).is_none());

        // DNS: an answer echoing our id and question is verified, any other
        // id is refused even on the right port.
        let (port, query) = probe_payload(53);
        let ev = validate(&udp_packet(53, port, &query), &S, keys).unwrap();
        assert_eq!(
            (ev.kind(), ev.verified, ev.remote_port),
            (Some(ReplyKind::Udp), 1, 53)
        );
        let mut wrong = query.clone();
        wrong[0] ^= 0x80;
        assert!(validate(&udp_packet(53, port, &wrong), &S, keys).is_none());
        assert!(validate(&udp_packet(53, port, b""), &S, keys).is_none());

        // NetBIOS: a 16-bit id; refused when wrong, unverified when right.
        let (port, query) = probe_payload(137);
        assert_eq!(
            validate(&udp_packet(137, port, &query), &S, keys)
                .unwrap()
                .verified,
            0
        );
        let mut wrong = query.clone();
        wrong[1] ^= 1;
        assert!(validate(&udp_packet(137, port, &wrong), &S, keys).is_none());

        // NTP: the origin timestamp must be our transmit timestamp.
        let (port, query) = probe_payload(123);
        let mut answer = [0u8; 48];
        answer[24..32].copy_from_slice(&query[40..48]);
        assert_eq!(
            validate(&udp_packet(123, port, &answer), &S, keys)
                .unwrap()
                .verified,
            1
        );
        answer[24] ^= 1;
        assert!(validate(&udp_packet(123, port, &answer), &S, keys).is_none());
    }

    #[test]
    fn replies_of_protocols_the_slot_does_not_send_are_not_taken() {
        let (tport, hash) = flow(IPPROTO_TCP);
        let syn_ack = tcp(TCP_SYN | TCP_ACK, seq_of(hash) + 1, tport);
        let (uport, _) = flow(IPPROTO_UDP);
        let udp = udp_packet(443, uport, b"x");
        let echo = echo_reply(&REMOTE, &LOCAL);
        assert!(validate(&syn_ack, &S, only(protocols::TCP)).is_some());
        assert!(validate(&syn_ack, &S, only(protocols::UDP | protocols::ICMP)).is_none());
        assert!(validate(&udp, &S, only(protocols::UDP)).is_some());
        assert!(validate(&udp, &S, only(protocols::TCP | protocols::ICMP)).is_none());
        assert!(validate(&echo, &S, only(protocols::ICMP)).is_some());
        assert!(validate(&echo, &S, only(protocols::TCP | protocols::UDP)).is_none());
        let err = parse(&icmp_error_v4(&udp_probe_v4(53, None)));
        assert!(validate(&err, &S, only(protocols::UDP)).is_some());
        assert!(validate(&err, &S, only(protocols::TCP | protocols::ICMP)).is_none());
        let err = parse(&icmp_error_v4(&tcp_probe_v4(None)));
        assert!(validate(&err, &S, only(protocols::TCP)).is_some());
        assert!(validate(&err, &S, only(protocols::UDP)).is_none());
        assert!(validate(&syn_ack, &S, only(0)).is_none());
    }

    fn parse(frame: &[u8]) -> Packet {
        frame::parse(frame).expect("parses")
    }

    fn eth() -> etherparse::PacketBuilderStep<etherparse::Ethernet2Header> {
        PacketBuilder::ethernet2([2; 6], [3; 6])
    }

    /// Our SYN to REMOTE:443 as the agent sends it (identification from the
    /// tag), or with identification `ident`.
    fn tcp_probe_v4(ident: Option<u16>) -> Vec<u8> {
        let (port, hash) = flow(IPPROTO_TCP);
        let mut out = Vec::new();
        PacketBuilder::ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64)
            .tcp(port, 443, seq_of(hash), 1024)
            .syn()
            .write(&mut out, &[])
            .unwrap();
        let id = ident.unwrap_or(ident_of(4, tag_of(&KEY, hash)) as u16);
        set_ipv4_id(&mut out, id);
        out
    }

    fn set_ipv4_id(packet: &mut [u8], id: u16) {
        packet[4..6].copy_from_slice(&id.to_be_bytes());
        packet[10..12].fill(0);
        let sum = crate::checksum::fold(crate::checksum::sum_words(0, &packet[..20]));
        packet[10..12].copy_from_slice(&sum.to_be_bytes());
    }

    /// Our UDP probe to REMOTE:`port`, or with identification `ident`.
    fn udp_probe_v4(port: u16, ident: Option<u16>) -> Vec<u8> {
        let (local, hash) = flow_to(&REMOTE, &LOCAL, port, IPPROTO_UDP);
        let (_, payload) = probe_payload(port);
        let mut out = Vec::new();
        PacketBuilder::ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64)
            .udp(local, port)
            .write(&mut out, &payload)
            .unwrap();
        let id = ident.unwrap_or(ident_of(4, tag_of(&KEY, hash)) as u16);
        set_ipv4_id(&mut out, id);
        out
    }

    /// A router's "admin prohibited" quoting the first 28 bytes of `probe`.
    fn icmp_error_v4(probe: &[u8]) -> Vec<u8> {
        let icmp = Icmpv4Type::DestinationUnreachable(
            icmpv4::DestUnreachableHeader::from_values(13, 0).unwrap(),
        );
        let mut out = Vec::new();
        eth()
            .ipv4([198, 18, 0, 254], [198, 18, 0, 1], 64)
            .icmpv4(icmp)
            .write(&mut out, &probe[..28])
            .unwrap();
        out
    }

    #[test]
    fn icmp_errors_are_checked_against_the_quoted_probe() {
        let ev = validate(&parse(&icmp_error_v4(&tcp_probe_v4(None))), &S, keys).unwrap();
        assert_eq!(
            ev.remote_addr(),
            REMOTE,
            "keyed by the probed host, not the router"
        );
        assert_eq!(
            (ev.kind(), ev.icmp_type, ev.icmp_code, ev.protocol),
            (Some(ReplyKind::Unreachable), 3, 13, 6)
        );
        let (_, hash) = flow(IPPROTO_TCP);
        let right = ident_of(4, tag_of(&KEY, hash)) as u16;
        let wrong_id = parse(&icmp_error_v4(&tcp_probe_v4(Some(right ^ 1))));
        assert!(validate(&wrong_id, &S, keys).is_none(), "wrong IP ID");
        let mut wrong_seq = tcp_probe_v4(None);
        wrong_seq[27] ^= 1;
        assert!(validate(&parse(&icmp_error_v4(&wrong_seq)), &S, keys).is_none());

        for port in [53, 123, 137, 161, 1900, 11211, 7000] {
            let probe = udp_probe_v4(port, None);
            let ev = validate(&parse(&icmp_error_v4(&probe)), &S, keys)
                .unwrap_or_else(|| panic!("port {port}"));
            assert_eq!((ev.protocol, ev.remote_port), (IPPROTO_UDP, port));
            let id = u16::from_be_bytes([probe[4], probe[5]]);
            let wrong_id = udp_probe_v4(port, Some(id ^ 0x100));
            assert!(
                validate(&parse(&icmp_error_v4(&wrong_id)), &S, keys).is_none(),
                "port {port}: wrong IP ID"
            );
            // Right IP ID and ports, a checksum of some other payload.
            let mut wrong_sum = probe.clone();
            wrong_sum[26] ^= 0x40;
            assert!(
                validate(&parse(&icmp_error_v4(&wrong_sum)), &S, keys).is_none(),
                "port {port}: wrong checksum"
            );
            let mut wrong_len = probe.clone();
            wrong_len[25] ^= 1;
            assert!(validate(&parse(&icmp_error_v4(&wrong_len)), &S, keys).is_none());
        }
    }

    /// An ICMPv6 port unreachable quoting our UDP probe to REMOTE6:`port`
    /// with flow label `label` (ours if `None`) and its whole payload.
    fn icmp_error_v6(port: u16, label: Option<u32>) -> Vec<u8> {
        let (local, hash) = flow_to(&REMOTE6, &LOCAL6, port, IPPROTO_UDP);
        let tag = tag_of(&KEY, hash);
        let mut buf = [0u8; payload::MAX_LEN];
        let n = payload::write(port, payload_secret(hash, tag), &mut buf);
        let mut probe = Vec::new();
        PacketBuilder::ipv6(LOCAL6.bytes, REMOTE6.bytes, 64)
            .udp(local, port)
            .write(&mut probe, &buf[..n])
            .unwrap();
        let label = label.unwrap_or(ident_of(6, tag));
        probe[1] = (label >> 16) as u8;
        probe[2..4].copy_from_slice(&(label as u16).to_be_bytes());
        let mut out = Vec::new();
        let icmp = Icmpv6Type::DestinationUnreachable(icmpv6::DestUnreachableCode::Port);
        eth()
            .ipv6(REMOTE6.bytes, LOCAL6.bytes, 64)
            .icmpv6(icmp)
            .write(&mut out, &probe)
            .unwrap();
        out
    }

    #[test]
    fn icmpv6_errors_check_the_flow_label() {
        for port in [53, 9] {
            let ev = validate(&parse(&icmp_error_v6(port, None)), &S, keys).unwrap();
            assert_eq!((ev.family, ev.icmp_code, ev.remote_port), (6, 4, port));
            let (_, hash) = flow_to(&REMOTE6, &LOCAL6, port, IPPROTO_UDP);
            let right = ident_of(6, tag_of(&KEY, hash));
            for wrong in [right ^ 1, right ^ 0x8_0000, 0] {
                if wrong != right {
                    let frame = icmp_error_v6(port, Some(wrong));
                    assert!(validate(&parse(&frame), &S, keys).is_none(), "{wrong:x}");
                }
            }
        }
    }

    fn echo_reply(remote: &Addr, local: &Addr) -> Packet {
        let protocol = if remote.family == 4 { 1 } else { 58 };
        let hash = probe_hash(&KEY, remote, local, 0, protocol);
        let (id, seq) = echo_id_seq(hash, 2);
        Packet {
            src: *remote,
            dst: *local,
            ttl: 64,
            transport: Transport::EchoReply {
                id,
                seq,
                data: echo_data(tag_of(&KEY, hash)),
            },
        }
    }

    #[test]
    fn echo_replies_carry_slot_hash_and_data() {
        for (remote, local) in [(REMOTE, LOCAL), (REMOTE6, LOCAL6)] {
            let ok = echo_reply(&remote, &local);
            assert_eq!(
                validate(&ok, &S, keys).unwrap().kind(),
                Some(ReplyKind::EchoReply)
            );
            let Transport::EchoReply { id, seq, data } = ok.transport else {
                unreachable!()
            };
            for (id, seq, data) in [
                (id, seq ^ 1, data),
                (id ^ 0x2000, seq, data),
                (id, seq, data ^ 1),
                (id, seq, 0),
            ] {
                let p = Packet {
                    transport: Transport::EchoReply { id, seq, data },
                    ..ok
                };
                assert!(validate(&p, &S, keys).is_none());
            }
        }
        // A real frame, through the parser.
        let ok = echo_reply(&REMOTE, &LOCAL);
        let Transport::EchoReply { id, seq, data } = ok.transport else {
            unreachable!()
        };
        let mut frame = Vec::new();
        eth()
            .ipv4([198, 18, 0, 2], [198, 18, 0, 1], 64)
            .icmpv4(Icmpv4Type::EchoReply(IcmpEchoHeader { id, seq }))
            .write(&mut frame, &data.to_be_bytes())
            .unwrap();
        assert!(validate(&parse(&frame), &S, keys).is_some());
    }

    #[test]
    fn quoted_udp_checksums_match_etherparse() {
        // udp_probe_checksum against etherparse's checksum of the same datagram.
        for port in [53, 161, 1900, 9] {
            let probe = udp_probe_v4(port, None);
            let Transport::Unreachable { quoted, .. } = parse(&icmp_error_v4(&probe)).transport
            else {
                panic!()
            };
            let (_, payload) = probe_payload(port);
            let (_, hash) = flow_to(&REMOTE, &LOCAL, port, IPPROTO_UDP);
            let (len, sum) =
                payload::probe_len_and_sum(port, payload_secret(hash, tag_of(&KEY, hash)));
            assert_eq!(usize::from(len), payload.len());
            assert_eq!(udp_probe_checksum(&quoted, len, sum), quoted.udp_check);
            let _: Quoted = quoted;
        }
    }
}
