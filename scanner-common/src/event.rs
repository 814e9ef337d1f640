//! The record the XDP program pushes through the ring buffer for every reply
//! that answers one of our probes.

use crate::cookie::Addr;

/// What kind of answer a probe got.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    /// TCP SYN-ACK.
    SynAck = 1,
    /// TCP RST.
    Rst = 2,
    /// A UDP datagram back from the probed port (see
    /// [`ReplyEvent::verified`] for how well it is proven).
    Udp = 3,
    /// ICMP / ICMPv6 destination unreachable quoting the probe.
    Unreachable = 4,
    /// ICMP / ICMPv6 echo reply (host discovery).
    EchoReply = 5,
}

impl ReplyKind {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::SynAck),
            2 => Some(Self::Rst),
            3 => Some(Self::Udp),
            4 => Some(Self::Unreachable),
            5 => Some(Self::EchoReply),
            _ => None,
        }
    }
}

/// One validated reply, always keyed by the probe it answers: `remote` is
/// the probed address even when a router sent the ICMP error.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyEvent {
    /// The probed address (IPv4 in the first 4 bytes).
    pub remote: [u8; 16],
    /// Our address the probe came from.
    pub local: [u8; 16],
    pub remote_port: u16,
    pub local_port: u16,
    /// 4 or 6.
    pub family: u8,
    /// IP protocol of the probe (TCP, UDP, ICMP or ICMPv6).
    pub protocol: u8,
    /// A [`ReplyKind`] value.
    pub kind: u8,
    /// Which scan in flight the reply belongs to (its key slot).
    pub slot: u8,
    /// The TTL / hop limit the reply arrived with.
    pub ttl: u8,
    /// ICMP type and code for [`ReplyKind::Unreachable`].
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// Non-zero if the reply was checked on at least 32 bits (ports
    /// included): always, except for UDP answers that echo no request id
    /// (or too short a one), which only their ports vouch for.
    pub verified: u8,
    pub _pad: [u8; 4],
}

impl ReplyEvent {
    pub const SIZE: usize = core::mem::size_of::<Self>();

    /// Reads an event from the bytes of a ring buffer record.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < Self::SIZE {
            return None;
        }
        // SAFETY: the length is checked above, `ReplyEvent` is `repr(C)` plain
        // data for which every bit pattern is valid, and `read_unaligned`
        // copes with the record's alignment.
        Some(unsafe { bytes.as_ptr().cast::<Self>().read_unaligned() })
    }

    pub fn kind(&self) -> Option<ReplyKind> {
        ReplyKind::from_u8(self.kind)
    }

    pub fn remote_addr(&self) -> Addr {
        Addr {
            family: self.family,
            bytes: self.remote,
        }
    }

    pub fn local_addr(&self) -> Addr {
        Addr {
            family: self.family,
            bytes: self.local,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_stable() {
        // The eBPF object and the agent must agree on this layout exactly.
        assert_eq!(ReplyEvent::SIZE, 48);
        assert_eq!(core::mem::offset_of!(ReplyEvent, remote_port), 32);
        assert_eq!(core::mem::offset_of!(ReplyEvent, kind), 38);
        assert_eq!(core::mem::offset_of!(ReplyEvent, icmp_code), 42);
        assert_eq!(core::mem::offset_of!(ReplyEvent, verified), 43);
    }

    #[test]
    fn round_trips_through_bytes() {
        let ev = ReplyEvent {
            remote: Addr::v4([198, 18, 0, 2]).bytes,
            local: Addr::v4([198, 18, 0, 1]).bytes,
            remote_port: 22,
            local_port: 61001,
            family: 4,
            protocol: 6,
            kind: ReplyKind::Unreachable as u8,
            slot: 3,
            ttl: 64,
            icmp_type: 3,
            icmp_code: 13,
            verified: 1,
            _pad: [0; 4],
        };
        // SAFETY: ReplyEvent is plain data; viewing it as bytes is sound.
        let bytes: [u8; ReplyEvent::SIZE] = unsafe { core::mem::transmute(ev) };
        assert_eq!(ReplyEvent::from_bytes(&bytes), Some(ev));
        assert_eq!(ReplyEvent::from_bytes(&bytes[..47]), None);
        assert_eq!(ev.kind(), Some(ReplyKind::Unreachable));
        assert_eq!(ev.remote_addr(), Addr::v4([198, 18, 0, 2]));
    }
}
