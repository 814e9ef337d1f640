//! UDP payloads that make common services answer: an empty datagram gets
//! silence from most of them, and silence reads as open|filtered.

/// DNS: a query for the root's NS records; any server answers (even REFUSED).
const DNS: &[u8] = &[
    0x13, 0x37, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1,
];

/// NTP: a version 4 client request (48 bytes, mode 3).
const NTP: &[u8] = &{
    let mut p = [0u8; 48];
    p[0] = 0xe3;
    p
};

/// SNMP v1 GetRequest for sysDescr.0 with community "public".
const SNMP: &[u8] = &[
    0x30, 0x29, 0x02, 0x01, 0x00, 0x04, 0x06, b'p', b'u', b'b', b'l', b'i', b'c', 0xa0, 0x1c, 0x02,
    0x04, 0, 0, 0, 1, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x30, 0x0e, 0x30, 0x0c, 0x06, 0x08, 0x2b,
    0x06, 0x01, 0x02, 0x01, 0x01, 0x01, 0x00, 0x05, 0x00,
];

/// NetBIOS name service: a node status request for "*".
const NETBIOS: &[u8] = b"\x80\xf0\x00\x10\x00\x01\x00\x00\x00\x00\x00\x00\x20CKAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\x00\x00\x21\x00\x01";

/// memcached: the UDP frame header, then "stats".
const MEMCACHED: &[u8] = b"\x00\x01\x00\x00\x00\x01\x00\x00stats\r\n";

/// SSDP/UPnP discovery.
const SSDP: &[u8] =
    b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\nST: ssdp:all\r\n\r\n";

/// The payload for a UDP probe to `port` (empty for ports without one).
pub fn for_port(port: u16) -> &'static [u8] {
    match port {
        53 => DNS,
        123 => NTP,
        137 => NETBIOS,
        161 => SNMP,
        1900 => SSDP,
        11211 => MEMCACHED,
        _ => &[],
    }
}

/// The longest payload, for sizing packet buffers.
pub const MAX_LEN: usize = 128;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_well_formed() {
        for port in [53, 123, 137, 161, 1900, 11211] {
            assert!(
                !for_port(port).is_empty() && for_port(port).len() <= MAX_LEN,
                "{port}"
            );
        }
        assert!(for_port(9).is_empty());
        // BER lengths: the outer SEQUENCE covers the rest, the PDU its rest.
        assert_eq!(usize::from(SNMP[1]) + 2, SNMP.len());
        assert_eq!(usize::from(SNMP[14]) + 15, SNMP.len());
        // DNS: one question, root name, type NS, class IN.
        assert_eq!(&DNS[4..6], &[0, 1]);
        assert_eq!(&DNS[12..], &[0, 0, 2, 0, 1]);
        assert_eq!(NETBIOS.len(), 50);
    }
}
