//! Deciding whether a packet answers one of our probes: the whole check the
//! XDP program runs, kept here so it is tested on the host.

use crate::{
    cookie::{Addr, ProbeKey, echo_id_seq, port_offset_of, probe_hash, seq_of},
    event::{ReplyEvent, ReplyKind},
    frame::{
        IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Packet, TCP_ACK, TCP_RST, TCP_SYN,
        Transport,
    },
    maps::Settings,
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

/// The slot and probe hash of a flow, if `local_port` is the port our probe
/// of that flow used.
#[inline(always)]
fn probe_flow(
    settings: &Settings,
    keys: &impl Fn(u32) -> Option<ProbeKey>,
    remote: &Addr,
    local: &Addr,
    remote_port: u16,
    local_port_seen: u16,
    protocol: u8,
) -> Option<(u32, u64)> {
    let slot = settings.slot_of(local_port_seen)?;
    let hash = probe_hash(&keys(slot)?, remote, local, remote_port, protocol);
    (local_port(settings, slot, hash) == local_port_seen).then_some((slot, hash))
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

/// The event for `packet` if it answers a probe of a scan whose key
/// `keys(slot)` returns, else `None`.
#[inline(always)]
pub fn validate(
    packet: &Packet,
    settings: &Settings,
    keys: impl Fn(u32) -> Option<ProbeKey>,
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
        _pad: [0; 5],
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
            let (slot, hash) = probe_flow(
                settings,
                &keys,
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
        Transport::Udp { src_port, dst_port } => {
            let (slot, _) = probe_flow(
                settings,
                &keys,
                &packet.src,
                &packet.dst,
                src_port,
                dst_port,
                IPPROTO_UDP,
            )?;
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
            let (slot, hash) = probe_flow(
                settings, &keys, &q.dst, &q.src, q.dst_port, q.src_port, q.protocol,
            )?;
            if q.protocol == IPPROTO_TCP && q.seq != seq_of(hash) {
                return None;
            }
            ev.remote = q.dst.bytes;
            ev.local = q.src.bytes;
            (ev.remote_port, ev.local_port, ev.protocol) = (q.dst_port, q.src_port, q.protocol);
            (ev.icmp_type, ev.icmp_code) = (icmp_type, code);
            (slot, ReplyKind::Unreachable)
        }
        Transport::EchoReply { id, seq } => {
            let slot = u32::from(id >> 13);
            let protocol = if packet.src.family == 4 {
                IPPROTO_ICMP
            } else {
                IPPROTO_ICMPV6
            };
            let hash = probe_hash(&keys(slot)?, &packet.src, &packet.dst, 0, protocol);
            if echo_id_seq(hash, slot) != (id, seq) {
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
pub fn validate_into(
    packet: &Packet,
    settings: &Settings,
    keys: impl Fn(u32) -> Option<ProbeKey>,
    out: &mut ReplyEvent,
) -> bool {
    match validate(packet, settings, keys) {
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

    fn flow(protocol: u8) -> (u16, u64) {
        let hash = probe_hash(&KEY, &REMOTE, &LOCAL, 443, protocol);
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
            (ok.kind(), ok.slot, ok.remote_port, ok.local_port),
            (Some(ReplyKind::SynAck), 2, 443, port)
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
                None
            })
            .is_none()
        );
    }

    #[test]
    fn udp_answers_need_the_port() {
        let (port, _) = flow(IPPROTO_UDP);
        let p = |dst_port| Packet {
            src: REMOTE,
            dst: LOCAL,
            ttl: 60,
            transport: Transport::Udp {
                src_port: 443,
                dst_port,
            },
        };
        assert_eq!(
            validate(&p(port), &S, keys).unwrap().kind(),
            Some(ReplyKind::Udp)
        );
        assert!(validate(&p(port ^ 1), &S, keys).is_none());
    }

    #[test]
    fn icmp_errors_are_checked_against_the_quoted_probe() {
        let (port, hash) = flow(IPPROTO_TCP);
        let err = |seq| Packet {
            src: Addr::v4([198, 18, 0, 254]),
            dst: LOCAL,
            ttl: 64,
            transport: Transport::Unreachable {
                icmp_type: 3,
                code: 13,
                quoted: Quoted {
                    protocol: IPPROTO_TCP,
                    src: LOCAL,
                    dst: REMOTE,
                    src_port: port,
                    dst_port: 443,
                    seq,
                },
            },
        };
        let ev = validate(&err(seq_of(hash)), &S, keys).unwrap();
        assert_eq!(
            ev.remote_addr(),
            REMOTE,
            "keyed by the probed host, not the router"
        );
        assert_eq!(
            (ev.kind(), ev.icmp_type, ev.icmp_code, ev.protocol),
            (Some(ReplyKind::Unreachable), 3, 13, 6)
        );
        assert!(validate(&err(seq_of(hash) ^ 1), &S, keys).is_none());
    }

    #[test]
    fn echo_replies_carry_slot_and_hash() {
        let hash = probe_hash(&KEY, &REMOTE, &LOCAL, 0, IPPROTO_ICMP);
        let (id, seq) = echo_id_seq(hash, 2);
        let p = |id, seq| Packet {
            src: REMOTE,
            dst: LOCAL,
            ttl: 64,
            transport: Transport::EchoReply { id, seq },
        };
        assert_eq!(
            validate(&p(id, seq), &S, keys).unwrap().kind(),
            Some(ReplyKind::EchoReply)
        );
        assert!(validate(&p(id, seq ^ 1), &S, keys).is_none());
        assert!(validate(&p(id ^ 0x2000, seq), &S, keys).is_none());
    }
}
