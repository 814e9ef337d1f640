//! The record the XDP program pushes through the ring buffer for every reply
//! that answers one of our probes.

/// What kind of answer a probe got.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    /// TCP SYN-ACK: the port is open.
    SynAck = 1,
    /// TCP RST: the port is closed.
    Rst = 2,
}

impl ReplyKind {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::SynAck),
            2 => Some(Self::Rst),
            _ => None,
        }
    }
}

/// One validated reply. Addresses are kept in network byte order in 16-byte
/// fields so IPv4 and IPv6 share one layout (IPv4 uses the first 4 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyEvent {
    /// The address that answered (the probe's destination).
    pub remote: [u8; 16],
    /// Our address the answer was sent to (the probe's source).
    pub local: [u8; 16],
    pub remote_port: u16,
    pub local_port: u16,
    /// 4 or 6.
    pub family: u8,
    /// IP protocol number of the probe (6 = TCP).
    pub protocol: u8,
    /// A [`ReplyKind`] value.
    pub kind: u8,
    /// Which scan in flight the reply belongs to (its key slot).
    pub slot: u8,
    /// The TTL / hop limit the reply arrived with.
    pub ttl: u8,
    pub _pad: [u8; 7],
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
        assert_eq!(core::mem::offset_of!(ReplyEvent, slot), 39);
    }

    #[test]
    fn round_trips_through_bytes() {
        let ev = ReplyEvent {
            remote: [198, 18, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            local: [198, 18, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            remote_port: 22,
            local_port: 61001,
            family: 4,
            protocol: 6,
            kind: ReplyKind::SynAck as u8,
            slot: 3,
            ttl: 64,
            _pad: [0; 7],
        };
        // SAFETY: ReplyEvent is plain data; viewing it as bytes is sound.
        let bytes: [u8; ReplyEvent::SIZE] = unsafe { core::mem::transmute(ev) };
        assert_eq!(ReplyEvent::from_bytes(&bytes), Some(ev));
        assert_eq!(ReplyEvent::from_bytes(&bytes[..47]), None);
        assert_eq!(ev.kind(), Some(ReplyKind::SynAck));
    }
}
