//! Layout of the maps the agent and the XDP program share.

/// How many scans can be in flight at once, each with its own key slot.
pub const MAX_SCANS: u32 = 8;

/// Size of each event ring buffer (bytes): room for ~87k events between
/// two polls.
pub const EVENTS_BYTES: u32 = 4 << 20;

/// Event ring buffers (`EVENTS0`..`EVENTS3`); CPU `c` writes to ring
/// `c % EVENT_RINGS`. One shared ring made every reply's reservation take
/// the same spinlock and bounce its cache lines between CPUs: at 740k
/// replies a second on two cores that was a tenth of the senders' time.
pub const EVENT_RINGS: u32 = 4;

/// The name of event ring `i`.
pub const EVENT_RING_NAMES: [&str; EVENT_RINGS as usize] =
    ["EVENTS0", "EVENTS1", "EVENTS2", "EVENTS3"];

/// Index 0 of the `SETTINGS` array map.
///
/// Probes use local ports `port_base .. port_base + MAX_SCANS * ports_per_slot`;
/// slot `s` owns the sub-range starting at `port_base + s * ports_per_slot`, so
/// the XDP program finds the key to check from the destination port alone.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub port_base: u16,
    pub ports_per_slot: u16,
    pub _pad: u32,
}

impl Settings {
    /// The slot a reply to `local_port` belongs to, if the port is ours.
    #[inline(always)]
    pub fn slot_of(&self, local_port: u16) -> Option<u32> {
        if self.ports_per_slot == 0 || local_port < self.port_base {
            return None;
        }
        let slot = u32::from(local_port - self.port_base) / u32::from(self.ports_per_slot);
        if slot < MAX_SCANS { Some(slot) } else { None }
    }
}

/// A value of the `KEYS` array map: one per slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotKey {
    pub key: [u64; 2],
    /// The [`protocols`] the slot's scan sends probes of; zero while no
    /// scan uses the slot. The XDP program takes a reply only if its
    /// protocol is one of them, so traffic of other protocols to ports of
    /// the slot passes untouched.
    pub protocols: u64,
}

/// Bits of [`SlotKey::protocols`].
pub mod protocols {
    /// TCP SYN probes (their SYN-ACK / RST answers and ICMP errors quoting them).
    pub const TCP: u64 = 1;
    /// UDP probes (UDP answers and ICMP errors quoting them).
    pub const UDP: u64 = 2;
    /// ICMP / ICMPv6 echo requests (echo replies).
    pub const ICMP: u64 = 4;
}

/// A key alone: a scan sending probes of every protocol.
impl From<[u64; 2]> for SlotKey {
    #[inline(always)]
    fn from(key: [u64; 2]) -> Self {
        Self {
            key,
            protocols: protocols::TCP | protocols::UDP | protocols::ICMP,
        }
    }
}

impl SlotKey {
    /// Whether the slot's scan sends probes of `protocol` (a [`protocols`] bit).
    #[inline(always)]
    pub const fn sends(&self, protocol: u64) -> bool {
        self.protocols & protocol != 0
    }
}

/// Indices of the per-CPU `COUNTERS` array map.
pub mod counter {
    /// Frames the program looked at.
    pub const FRAMES: u32 = 0;
    /// Replies that matched a probe cookie.
    pub const MATCHED: u32 = 1;
    /// Matched replies lost because the ring buffer was full.
    pub const RINGBUF_FULL: u32 = 2;
    pub const COUNT: u32 = 3;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: both are `repr(C)` plain data with no padding holes the kernel
    // could misinterpret, and every bit pattern is a valid value.
    unsafe impl aya::Pod for super::Settings {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SlotKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_of_splits_the_port_range() {
        let s = Settings {
            port_base: 61000,
            ports_per_slot: 500,
            _pad: 0,
        };
        assert_eq!(s.slot_of(60999), None);
        assert_eq!(s.slot_of(61000), Some(0));
        assert_eq!(s.slot_of(61499), Some(0));
        assert_eq!(s.slot_of(61500), Some(1));
        assert_eq!(s.slot_of(61000 + 8 * 500 - 1), Some(7));
        assert_eq!(s.slot_of(61000 + 8 * 500), None);
        assert_eq!(Settings::default().slot_of(61000), None);
    }
}
